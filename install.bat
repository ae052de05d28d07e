@echo off
rem LoRA Workshop installer for Windows: double-click install.bat, or run it in a terminal.
rem
rem Creates .\venv with Python 3.11-3.13, installs the torch build that fits this computer (the CUDA build for
rem the NVIDIA GPU and driver, else PyPI's CPU build), then requirements.txt, then runs the self-check
rem "python -m core doctor". Safe to run again: it reuses the venv and keeps a torch that already fits.
rem Every decision (which Python, which torch build, what to tell you) is made by core\install\plan.py, the
rem same module install.sh runs; this file only finds a Python and runs the steps. Each run is logged in
rem logs\install-<date>-<time>.log.
rem
rem Environment variables (all optional):
rem   LW_TORCH=auto, cpu, pypi, cu126, cu130 or cu132: which torch build (default auto; torch 2.14 has no cu128)
rem   LW_TORCH_INDEX=URL   install torch and torchvision from this package index instead
rem   LW_PYTHON=PATH       use this python.exe to create the venv
rem   LW_NO_PAUSE=1        do not wait for a key press at the end
rem   LW_INSTALL_DRY_RUN=1 only show the Python and torch build it would use, change nothing
setlocal EnableExtensions DisableDelayedExpansion
rem A Python of another installation must not read this one's settings.
set "PYTHONHOME="
set "PYTHONPATH="
set "PYTHONUTF8=1"
set "SYS32=%SystemRoot%\System32"

set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
set "VENV=%ROOT%\venv"
set "PY=%VENV%\Scripts\python.exe"
set "PLAN=%ROOT%\core\install\plan.py"
set "TMPF=%TEMP%\lw_install_%RANDOM%%RANDOM%.txt"
cd /d "%ROOT%"
if errorlevel 1 goto fail_cd
if not exist "%PLAN%" goto fail_incomplete

rem The log: logs\install-YYYYMMDD-HHMMSS.log (the time from PowerShell, which every Windows 10/11 has).
set "LOG=%TMPF%.log"
if defined LW_INSTALL_DRY_RUN goto log_ready
if not exist "%ROOT%\logs\" mkdir "%ROOT%\logs"
set "STAMP="
for /f %%t in ('%SYS32%\WindowsPowerShell\v1.0\powershell.exe -NoProfile -Command Get-Date -Format yyyyMMdd-HHmmss 2^>nul') do set "STAMP=%%t"
if not defined STAMP set "STAMP=%RANDOM%%RANDOM%"
set "LOG=%ROOT%\logs\install-%STAMP%.log"
:log_ready
set "PLANLOG=--log "%LOG%""

echo.
echo == LoRA Workshop installer, project folder: %ROOT%
>>"%LOG%" echo == LoRA Workshop installer, project folder: %ROOT%

rem ================================================================ Python
echo.
echo == Step 1/5: Python
>>"%LOG%" echo == Step 1/5: Python
if not exist "%PY%" goto find_python
"%PY%" -I "%PLAN%" %PLANLOG% python >nul 2>&1
if not errorlevel 1 goto venv_reuse
echo    The venv folder holds no usable Python; it will be replaced:
"%PY%" -I "%PLAN%" %PLANLOG% python

:find_python
set "PYCMD="
if defined LW_PYTHON goto try_lw_python
for %%C in ("py -3.12" "py -3.11" "py -3.13" "python" "python3" "py") do if not defined PYCMD call :try_py %%~C
if not defined PYCMD goto fail_no_python
goto python_found

:try_lw_python
call :try_py "%LW_PYTHON%"
if not defined PYCMD goto fail_lw_python

:python_found
echo    Using: %PYCMD%
%PYCMD% -I "%PLAN%" %PLANLOG% python
set RUN=%PYCMD%
if not defined LW_INSTALL_DRY_RUN goto create_venv
echo    Dry run: would create the venv in %VENV%
goto gpu_step
:create_venv
echo    Creating the virtual environment in %VENV%
%PYCMD% -I "%PLAN%" %PLANLOG% make-venv "%VENV%"
if errorlevel 1 goto fail_venv
echo    Updating pip
"%PY%" -I -m pip install --upgrade pip --log "%LOG%"
if errorlevel 1 echo    WARNING: pip could not be updated; continuing with the old one.
goto python_done

:venv_reuse
echo    Reusing the existing venv: %VENV%
"%PY%" -I "%PLAN%" %PLANLOG% python

:python_done
set RUN="%PY%"
"%PY%" -I -m pip --version >nul 2>&1
if errorlevel 1 goto fail_pip

rem ================================================================ GPU and torch build
:gpu_step
echo.
echo == Step 2/5: GPU and PyTorch build
>>"%LOG%" echo == Step 2/5: GPU and PyTorch build
%RUN% -I "%PLAN%" %PLANLOG% torch --env-file "%TMPF%"
if errorlevel 1 goto fail_plan
for /f "usebackq eol=# tokens=1* delims==" %%a in ("%TMPF%") do set "%%a=%%b"
%RUN% -I "%PLAN%" %PLANLOG% folder "%ROOT%" --kind %TORCH_BUILD%
if not defined LW_INSTALL_DRY_RUN goto torch_step
echo.
echo == Dry run (LW_INSTALL_DRY_RUN is set): nothing was changed.
call :cleanup
exit /b 0

rem ================================================================ torch
:torch_step
echo.
echo == Step 3/5: PyTorch %TORCH_VERSION% and torchvision %TORCHVISION_VERSION%
>>"%LOG%" echo == Step 3/5: PyTorch %TORCH_VERSION% and torchvision %TORCHVISION_VERSION%
"%PY%" -I "%PLAN%" %PLANLOG% installed --build %TORCH_BUILD% --accept "%TORCH_ACCEPT%"
set "RC=%errorlevel%"
if "%RC%"=="0" goto torch_done
set "FORCE_ARG="
if "%RC%"=="4" set "FORCE_ARG=--force-reinstall"
set "INDEX_ARGS="
if defined TORCH_INDEX set INDEX_ARGS=--index-url "%TORCH_INDEX%"
echo    Running: pip install torch==%TORCH_VERSION%%TORCH_LOCAL% torchvision==%TORCHVISION_VERSION%%TORCH_LOCAL% %INDEX_ARGS% %FORCE_ARG%
echo    (this downloads up to a few GB; it can take a while)
"%PY%" -I -m pip install "torch==%TORCH_VERSION%%TORCH_LOCAL%" "torchvision==%TORCHVISION_VERSION%%TORCH_LOCAL%" %INDEX_ARGS% %FORCE_ARG% --log "%LOG%"
if errorlevel 1 goto fail_torch
"%PY%" -I "%PLAN%" %PLANLOG% installed --after --build %TORCH_BUILD% --accept "%TORCH_ACCEPT%"
if errorlevel 1 goto fail_torch_import

:torch_done
rem Later "pip install -c venv\constraints.txt" runs (this script's, and yours) cannot replace torch.
"%PY%" -I "%PLAN%" %PLANLOG% constraints "%VENV%\constraints.txt"
if errorlevel 1 goto fail_constraints

rem ================================================================ requirements
echo.
echo == Step 4/5: libraries from requirements.txt
>>"%LOG%" echo == Step 4/5: libraries from requirements.txt
"%PY%" -I -m pip install -r "%ROOT%\requirements.txt" -c "%VENV%\constraints.txt" --log "%LOG%"
if errorlevel 1 goto fail_requirements

rem ================================================================ self-check
echo.
echo == Step 5/5: self-check (python -m core doctor)
>>"%LOG%" echo == Step 5/5: self-check
"%PY%" -I "%PLAN%" tee "%LOG%" -- "%PY%" -m core doctor
if errorlevel 1 goto fail_doctor

echo.
echo == Done. Start the GUI with:  run.bat
echo    The log of this installation: %LOG%
>>"%LOG%" echo == Done.
call :cleanup
call :maybe_pause
exit /b 0

rem ================================================================ subroutines

rem Try one Python command (all arguments): PYCMD is set to it when plan.py accepts it. Its reason is
rem shown when it is a Python that plan.py turned down.
:try_py
%* -I "%PLAN%" python > "%TMPF%" 2>&1
if errorlevel 1 goto try_py_no
set PYCMD=%*
exit /b 0
:try_py_no
"%SYS32%\findstr.exe" /b /c:"    Python " "%TMPF%" >nul 2>&1
if errorlevel 1 exit /b 1
type "%TMPF%"
>>"%LOG%" type "%TMPF%"
exit /b 1

:cleanup
del "%TMPF%" >nul 2>&1
if defined LW_INSTALL_DRY_RUN del "%TMPF%.log" >nul 2>&1
exit /b 0

:maybe_pause
if defined LW_NO_PAUSE exit /b 0
if defined CI exit /b 0
pause
exit /b 0

rem ================================================================ errors

:fail_no_python
echo.
echo ERROR: No suitable Python found. LoRA Workshop needs Python 3.11, 3.12 or 3.13 (64-bit).
"%SYS32%\where.exe" python 2>nul | "%SYS32%\findstr.exe" /i "WindowsApps" >nul
if errorlevel 1 goto fail_no_python_2
echo.
echo   The "python" command on this computer is the Microsoft Store shortcut in
echo   %%LOCALAPPDATA%%\Microsoft\WindowsApps, not a real Python: it only offers to open the Store.
echo   Install Python as below, or turn the shortcut off in Settings, Apps, Advanced app settings,
echo   App execution aliases: python.exe and python3.exe.
:fail_no_python_2
echo.
echo   Install Python 3.12 with the Python Install Manager: https://www.python.org/downloads/windows/
echo   (or "Python Install Manager" in the Microsoft Store), then in a NEW terminal:  py install 3.12
echo   Or the classic installer of Python 3.12's last release, ticking "Add python.exe to PATH":
echo   https://www.python.org/ftp/python/3.12.10/python-3.12.10-amd64.exe
echo   Then run install.bat again. A given interpreter: set LW_PYTHON=C:\path\to\python.exe
goto fail
:fail_lw_python
echo ERROR: LW_PYTHON=%LW_PYTHON% is not a usable Python: 3.11 to 3.13, 64-bit, with the venv module.
goto fail
:fail_cd
echo ERROR: Cannot enter the project folder %ROOT%
goto fail
:fail_incomplete
echo ERROR: core\install\plan.py is missing: the project folder is incomplete. Download or clone it again.
goto fail
:fail_venv
echo ERROR: Could not create the venv with %PYCMD%
goto fail
:fail_pip
echo ERROR: pip does not work in %VENV%. Delete the venv folder and run install.bat again.
goto fail
:fail_plan
echo ERROR: No PyTorch build was chosen, see above.
goto fail
:fail_torch
echo ERROR: Installing torch failed, see pip's message above. Check the internet connection and free disk space.
echo   To choose another build:  set LW_TORCH=cpu  or cu126, ...  or  set LW_TORCH_INDEX=URL, then run install.bat
goto fail
:fail_torch_import
echo ERROR: torch was installed but does not import. To see why run:  "%PY%" -c "import torch"
goto fail
:fail_constraints
echo ERROR: Could not write %VENV%\constraints.txt
goto fail
:fail_requirements
echo ERROR: Installing requirements.txt failed, see pip's message above.
goto fail
:fail_doctor
echo ERROR: The self-check found a problem: the FAIL lines above.
goto fail

:fail
echo.
echo The installation did not finish. Fix the problem above and run install.bat again.
if not defined LW_INSTALL_DRY_RUN echo The log of this run, to attach to a bug report: %LOG%
>>"%LOG%" echo The installation did not finish.
call :cleanup
call :maybe_pause
exit /b 1
