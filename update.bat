@echo off
rem Update LoRA Workshop: fetch the newest version (git checkouts only), then run install.bat again.
setlocal EnableExtensions DisableDelayedExpansion
set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
cd /d "%ROOT%"
if not exist "%ROOT%\.git\" goto no_git
git --version >nul 2>&1
if errorlevel 1 goto no_git_cmd
echo == Updating the code: git pull --ff-only
git -C "%ROOT%" pull --ff-only
if errorlevel 1 goto pull_failed
goto install

:no_git
echo == Not a git checkout: download the new version yourself. Running the installer again now.
goto install
:no_git_cmd
echo == git is not installed, so the code cannot be updated here. Running the installer again now.
goto install
:pull_failed
echo ERROR: git pull failed: local changes or a diverged branch? Resolve it, then run update.bat again.
if not defined LW_NO_PAUSE pause
exit /b 1

:install
call "%ROOT%\install.bat" %*
exit /b %errorlevel%
