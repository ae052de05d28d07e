@echo off
rem Start the LoRA Workshop GUI:  run.bat [--port 7860] [--no-browser] ...   (run.bat --help lists all)
rem The page opens in your browser once it answers (not with --no-browser or LW_NO_BROWSER=1); when port
rem 7860 is taken (another web UI) the next free port is used and printed.
setlocal EnableExtensions DisableDelayedExpansion
set "PYTHONHOME="
set "PYTHONPATH="
set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
set "PY=%ROOT%\venv\Scripts\python.exe"
if exist "%PY%" goto run
echo LoRA Workshop is not installed yet: there is no venv in this folder. Run install.bat first.
if not defined LW_NO_PAUSE pause
exit /b 1

:run
cd /d "%ROOT%"
"%PY%" app.py --inbrowser %*
set "RC=%errorlevel%"
rem Keep the window open after an error when the script was double-clicked.
if not "%RC%"=="0" if not defined LW_NO_PAUSE pause
exit /b %RC%
