@echo off
rem Update LoRA Workshop: fetch the newest version (git checkouts only), then run install.bat again.
rem
rem cmd reads a batch file line by line, by offset, while it runs it: when "git pull" replaces this file,
rem the lines after the pull would be read from the new file at the old offset. So the pull and everything
rem after it are one block, which cmd reads whole before running it, and the block ends the script.
setlocal EnableExtensions DisableDelayedExpansion
set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
cd /d "%ROOT%"
if not exist "%ROOT%\.git\" goto no_git
git --version >nul 2>&1
if errorlevel 1 goto no_git_cmd
(
  echo == Updating the code: git pull --ff-only
  git -C "%ROOT%" pull --ff-only
  if errorlevel 1 (
    echo ERROR: git pull failed: local changes or a diverged branch? Resolve it, then run update.bat again.
    if not defined LW_NO_PAUSE pause
    exit /b 1
  )
  call "%ROOT%\install.bat" %*
  exit /b
)

:no_git
echo == Not a git checkout: download the new version yourself. Running the installer again now.
call "%ROOT%\install.bat" %*
exit /b
:no_git_cmd
echo == git is not installed, so the code cannot be updated here. Running the installer again now.
call "%ROOT%\install.bat" %*
exit /b
