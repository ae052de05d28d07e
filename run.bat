@echo off
rem Start the LoRA Workshop GUI:  run.bat [--port 7860] [--inbrowser] ...   (run.bat --help lists all)
setlocal EnableExtensions DisableDelayedExpansion
set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
set "PY=%ROOT%\venv\Scripts\python.exe"
if exist "%PY%" goto run
echo LoRA Workshop is not installed yet: there is no venv in this folder. Run install.bat first.
if not defined LW_NO_PAUSE pause
exit /b 1

:run
cd /d "%ROOT%"
"%PY%" app.py %*
set "RC=%errorlevel%"
rem Keep the window open after an error when the script was double-clicked.
if not "%RC%"=="0" if not defined LW_NO_PAUSE pause
exit /b %RC%
