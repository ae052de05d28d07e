@echo off
rem LoRA Workshop installer for Windows: double-click install.bat, or run it in a terminal.
rem
rem Creates .\venv with a Python 3.10-3.12, installs the torch build that fits this computer
rem (CUDA build matched to the NVIDIA driver, else CPU), then requirements.txt, then runs the
rem self-check "python -m core doctor". Safe to run again: it reuses the venv and keeps a torch
rem that already fits.
rem
rem Environment variables (all optional):
rem   LW_TORCH=auto, cpu, pypi, cu126, cu128 or cu130: which torch build (default auto)
rem   LW_TORCH_INDEX=URL   install torch and torchvision from this package index instead
rem   LW_PYTHON=PATH       use this python.exe to create the venv
rem   LW_NO_PAUSE=1        do not wait for a key press at the end
rem   LW_INSTALL_DRY_RUN=1 only show the Python and torch build it would use, change nothing
setlocal EnableExtensions DisableDelayedExpansion

set "TORCH_VERSION=2.14.1"
set "TORCHVISION_VERSION=0.29.1"
set "TORCH_INDEX_BASE=https://download.pytorch.org/whl"
rem Oldest driver CUDA version (times 100) for each CUDA build of the pinned torch.
set "CU130_MIN=1300"
set "CU128_MIN=1208"
set "CU126_MIN=1206"
rem Drivers older than that but at least CUDA 12.0 still run CUDA 12 builds, with a warning.
set "CUDA_MIN_DRIVER=1200"

set "ROOT=%~dp0"
if "%ROOT:~-1%"=="\" set "ROOT=%ROOT:~0,-1%"
set "VENV=%ROOT%\venv"
set "PY=%VENV%\Scripts\python.exe"
set "CONSTRAINTS=%VENV%\constraints.txt"
set "TMPF=%TEMP%\lw_install_%RANDOM%%RANDOM%.txt"
cd /d "%ROOT%"
if errorlevel 1 goto fail_cd

echo.
echo == LoRA Workshop installer (project folder: %ROOT%)
echo.

rem ================================================================ Python
echo == Step 1/5: Python
call :venv_ok
if not errorlevel 1 goto venv_reuse

rem (no "if ... echo %PATH%" lines: a ")" in the folder name would end the echo early)
if not exist "%VENV%\" goto find_python
echo    The folder "%VENV%" holds no usable Python 3.10-3.12; it will be replaced.
:find_python
set "BASE_PY="
if defined LW_PYTHON goto try_lw_python
call :try_py py -3.11
if not errorlevel 1 goto python_found
call :try_py py -3.12
if not errorlevel 1 goto python_found
call :try_py py -3.10
if not errorlevel 1 goto python_found
call :try_py python
if not errorlevel 1 goto python_found
call :try_py python3
if not errorlevel 1 goto python_found
goto fail_no_python

:try_lw_python
call :try_py "%LW_PYTHON%"
if not errorlevel 1 goto python_found
echo ERROR: LW_PYTHON=%LW_PYTHON% is not a Python 3.10-3.12 with the venv module.
goto fail

:python_found
echo    Using %BASE_PY%
if not defined LW_INSTALL_DRY_RUN goto create_venv
echo    Dry run: would create the venv in %VENV%
goto gpu_step
:create_venv
if exist "%VENV%\" rmdir /s /q "%VENV%"
echo    Creating the virtual environment in %VENV%
"%BASE_PY%" -m venv "%VENV%"
if errorlevel 1 goto fail_venv
echo    Updating pip
"%PY%" -m pip install --upgrade pip
if errorlevel 1 echo    WARNING: pip could not be updated; continuing with the old one.
goto python_done

:venv_reuse
echo    Reusing the existing venv: %VENV%

:python_done
if defined LW_INSTALL_DRY_RUN goto gpu_step
"%PY%" -m pip --version >nul 2>&1
if errorlevel 1 goto fail_pip

rem ================================================================ GPU and torch build
:gpu_step
echo.
echo == Step 2/5: GPU
set "DRIVER_CUDA="
set "DRV_N=0"
nvidia-smi > "%TMPF%" 2>nul
if errorlevel 9009 goto no_nvidia
if errorlevel 1 goto nvidia_failed
set "SMILINE="
find "CUDA Version" < "%TMPF%" > "%TMPF%.line" 2>nul
set /p SMILINE=<"%TMPF%.line"
del "%TMPF%.line" >nul 2>&1
if not defined SMILINE goto nvidia_failed
set "SMILINE=%SMILINE:*CUDA Version:=%"
for /f "tokens=1" %%v in ("%SMILINE%") do set "DRIVER_CUDA=%%v"
if not defined DRIVER_CUDA goto nvidia_failed
call :vnum "%DRIVER_CUDA%" DRV_N
set "GPU_LINE=unknown"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "%TMPF%" 2>nul
set /p GPU_LINE=<"%TMPF%"
echo    NVIDIA GPU: %GPU_LINE%; the driver supports CUDA %DRIVER_CUDA%
goto gpu_done
:nvidia_failed
echo    WARNING: nvidia-smi is installed but did not report a CUDA version (driver problem?). Installing without CUDA.
set "DRIVER_CUDA="
goto gpu_done
:no_nvidia
echo    No NVIDIA GPU found (no nvidia-smi).
:gpu_done

rem TORCH_LOCAL: the wheels' local version label on that index (+cu128, +cpu), so that pip replaces a
rem torch of the same version but another build (it downloads the new one before removing the old).
set "TORCH_INDEX="
set "TORCH_LOCAL="
set "TORCH_KIND=any"
set "WANT_CUDA="
set "AUTO_CHOICE=0"
set "CHOICE=%LW_TORCH%"
if not defined CHOICE set "CHOICE=auto"
if defined LW_TORCH_INDEX goto choose_custom
if /i "%CHOICE%"=="auto" goto choose_auto
goto choose_named

:choose_custom
set "TORCH_INDEX=%LW_TORCH_INDEX%"
if "%TORCH_INDEX:~-1%"=="/" set "TORCH_INDEX=%TORCH_INDEX:~0,-1%"
set "LAST="
for %%I in ("%TORCH_INDEX:/=\%") do set "LAST=%%~nxI"
echo    LW_TORCH_INDEX is set: torch comes from %TORCH_INDEX%
if /i "%LAST%"=="cpu" set "TORCH_KIND=cpu"
if /i "%LAST%"=="cpu" set "TORCH_LOCAL=+cpu"
call :is_cu "%LAST%"
if errorlevel 1 goto choice_done
set "TORCH_KIND=cuda"
set "TORCH_LOCAL=+%LAST%"
call :cuda_of "%LAST%"
goto choice_done

:choose_auto
set "AUTO_CHOICE=1"
rem Without an NVIDIA GPU, PyPI's torch for Windows is the CPU build.
if not defined DRIVER_CUDA set "CHOICE=pypi"
if not defined DRIVER_CUDA goto choose_named
if %DRV_N% GEQ %CU130_MIN% set "CHOICE=cu130"
if %DRV_N% GEQ %CU130_MIN% goto choose_named
if %DRV_N% GEQ %CU128_MIN% set "CHOICE=cu128"
if %DRV_N% GEQ %CU128_MIN% goto choose_named
set "CHOICE=cu126"
if %DRV_N% GEQ %CU126_MIN% goto choose_named
if %DRV_N% LSS %CUDA_MIN_DRIVER% goto fail_old_driver
echo    WARNING: The NVIDIA driver supports CUDA %DRIVER_CUDA%; torch %TORCH_VERSION% is built for CUDA 12.6 or newer.
echo    WARNING: Installing the cu126 build, which usually runs on CUDA 12.x drivers. If the self-check says
echo    WARNING: "CUDA not available", update the NVIDIA driver (https://www.nvidia.com/drivers) and run this again.
goto choose_named

:choose_named
if /i "%CHOICE%"=="pypi" goto choice_done
if /i "%CHOICE%"=="cpu" goto choose_cpu
call :is_cu "%CHOICE%"
if errorlevel 1 goto fail_bad_choice
set "TORCH_KIND=cuda"
set "TORCH_INDEX=%TORCH_INDEX_BASE%/%CHOICE%"
set "TORCH_LOCAL=+%CHOICE%"
call :cuda_of "%CHOICE%"
goto choice_done
:choose_cpu
set "TORCH_KIND=cpu"
set "TORCH_INDEX=%TORCH_INDEX_BASE%/cpu"
set "TORCH_LOCAL=+cpu"
goto choice_done

:choice_done
set "CHOSEN=torch %TORCH_VERSION% from PyPI, the CPU-only build on Windows"
if defined TORCH_INDEX set "CHOSEN=torch %TORCH_VERSION% from %TORCH_INDEX%"
if "%TORCH_KIND%"=="cuda" set "CHOSEN=torch %TORCH_VERSION%, CUDA %WANT_CUDA% build, from %TORCH_INDEX%"
if "%TORCH_KIND%"=="cpu" set "CHOSEN=torch %TORCH_VERSION%, CPU-only build, from %TORCH_INDEX%"
echo    Chosen: %CHOSEN%
if not defined LW_INSTALL_DRY_RUN goto torch_step
echo.
echo == Dry run (LW_INSTALL_DRY_RUN is set): nothing was changed.
del "%TMPF%" >nul 2>&1
exit /b 0

:torch_step
rem ================================================================ torch
echo.
echo == Step 3/5: PyTorch %TORCH_VERSION% and torchvision %TORCHVISION_VERSION%
set "FORCE_ARG="
call :current_torch
if errorlevel 1 goto torch_missing
if not "%CUR_TVB%"=="%TORCH_VERSION%" goto torch_replace
if not "%CUR_VVB%"=="%TORCHVISION_VERSION%" goto torch_replace
if "%TORCH_KIND%"=="cpu" goto fits_cpu
if "%TORCH_KIND%"=="cuda" goto fits_cuda
goto torch_fits
:fits_cpu
if "%CUR_TC%"=="cpu" goto torch_fits
goto torch_replace
:fits_cuda
if "%CUR_TC%"=="cpu" goto torch_replace
if "%AUTO_CHOICE%"=="1" goto fits_cuda_auto
if "%CUR_TC%"=="%WANT_CUDA%" goto torch_fits
goto torch_replace
:fits_cuda_auto
call :vnum "%CUR_TC%" CUR_N
call :vnum "%WANT_CUDA%" WANT_N
if %CUR_N% LEQ %WANT_N% goto torch_fits
goto torch_replace

:torch_fits
echo    Already installed and fitting: torch %CUR_TV% (%CUR_TC%), torchvision %CUR_VV%. Skipping.
goto torch_done

:torch_replace
echo    Replacing torch %CUR_TV% / torchvision %CUR_VV% (%CUR_TC% build): not the wanted one.
goto torch_install
:torch_missing
rem Installed but not importable: reinstall it.
"%PY%" -m pip show torch >nul 2>&1
if not errorlevel 1 set "FORCE_ARG=--force-reinstall"
"%PY%" -m pip show torchvision >nul 2>&1
if not errorlevel 1 set "FORCE_ARG=--force-reinstall"
if defined FORCE_ARG echo    torch or torchvision is installed but does not import: reinstalling.
:torch_install
set "INDEX_ARGS="
if defined TORCH_INDEX set INDEX_ARGS=--index-url "%TORCH_INDEX%"
echo    Running: pip install torch==%TORCH_VERSION%%TORCH_LOCAL% torchvision==%TORCHVISION_VERSION%%TORCH_LOCAL% %INDEX_ARGS% %FORCE_ARG%
echo    (this downloads up to a few GB; it can take a while)
"%PY%" -m pip install "torch==%TORCH_VERSION%%TORCH_LOCAL%" "torchvision==%TORCHVISION_VERSION%%TORCH_LOCAL%" %INDEX_ARGS% %FORCE_ARG%
if errorlevel 1 goto fail_torch
call :current_torch
if errorlevel 1 goto fail_torch_import
echo    Installed torch %CUR_TV% (%CUR_TC%), torchvision %CUR_VV%

:torch_done
rem Later "pip install -c venv\constraints.txt" runs (this script's, and yours) cannot replace torch.
"%PY%" -c "import importlib.metadata as m; print('# Written by install.bat: the torch build matched to this computer. Install other'); print('# packages with  venv\\Scripts\\python.exe -m pip install -c venv\\constraints.txt PACKAGE'); print('torch==' + m.version('torch')); print('torchvision==' + m.version('torchvision'))" > "%CONSTRAINTS%"
if errorlevel 1 goto fail_constraints
echo    Pinned torch and torchvision in %CONSTRAINTS%

rem ================================================================ requirements
echo.
echo == Step 4/5: libraries from requirements.txt
"%PY%" -m pip install -r "%ROOT%\requirements.txt" -c "%CONSTRAINTS%"
if errorlevel 1 goto fail_requirements

rem ================================================================ self-check
echo.
echo == Step 5/5: self-check (python -m core doctor)
"%PY%" -m core doctor
if errorlevel 1 goto fail_doctor

echo.
echo == Done. Start the GUI with:  run.bat
del "%TMPF%" >nul 2>&1
call :maybe_pause
exit /b 0

rem ================================================================ subroutines

rem Is %PY% a Python 3.10-3.12? errorlevel 0 if yes.
:venv_ok
if not exist "%PY%" exit /b 1
"%PY%" -c "import sys; sys.exit(int(sys.version_info[:2] not in [(3, 10), (3, 11), (3, 12)]))" >nul 2>&1
exit /b %errorlevel%

rem Try one Python command (all arguments); on success BASE_PY is its python.exe.
:try_py
%* -c "import sys; sys.exit(int(sys.version_info[:2] not in [(3, 10), (3, 11), (3, 12)]))" >nul 2>&1
if errorlevel 1 exit /b 1
%* -c "import sys, venv, ensurepip; print(sys.executable)" > "%TMPF%" 2>nul
if errorlevel 1 exit /b 1
set "BASE_PY="
set /p BASE_PY=<"%TMPF%"
if not defined BASE_PY exit /b 1
exit /b 0

rem "12.8" -> 1208 into the variable named by %2
:vnum
set "%~2=0"
for /f "tokens=1,2 delims=." %%a in ("%~1") do set /a "%~2=%%a*100+%%b" >nul 2>&1
exit /b 0

rem errorlevel 0 if %1 looks like cu128 (cu and digits)
:is_cu
if "%~1"=="" exit /b 1
set "ISCU=%~1"
if /i not "%ISCU:~0,2%"=="cu" exit /b 1
set "ISCU=%ISCU:~2%"
if not defined ISCU exit /b 1
for /f "delims=0123456789" %%x in ("%ISCU%") do exit /b 1
exit /b 0

rem "cu128" -> WANT_CUDA=12.8
:cuda_of
set "CU=%~1"
set "CU=%CU:~2%"
set "WANT_CUDA=%CU:~0,-1%.%CU:~-1%"
exit /b 0

rem Sets CUR_TV CUR_VV CUR_TC (torch version, torchvision version, CUDA version or cpu) and the
rem versions without +local part CUR_TVB CUR_VVB; errorlevel 1 if torch is missing or broken.
:current_torch
set "CUR_TV=" & set "CUR_VV=" & set "CUR_TC="
"%PY%" -c "import importlib.metadata as m, torch, torchvision; print(m.version('torch'), m.version('torchvision'), torch.version.cuda or 'cpu')" > "%TMPF%" 2>nul
if errorlevel 1 exit /b 1
for /f "usebackq tokens=1-3" %%a in ("%TMPF%") do (set "CUR_TV=%%a" & set "CUR_VV=%%b" & set "CUR_TC=%%c")
if not defined CUR_TC exit /b 1
for /f "tokens=1 delims=+" %%v in ("%CUR_TV%") do set "CUR_TVB=%%v"
for /f "tokens=1 delims=+" %%v in ("%CUR_VV%") do set "CUR_VVB=%%v"
exit /b 0

:maybe_pause
if defined LW_NO_PAUSE exit /b 0
if defined CI exit /b 0
pause
exit /b 0

rem ================================================================ errors

:fail_no_python
echo.
echo ERROR: No suitable Python found. LoRA Workshop needs Python 3.10, 3.11 or 3.12.
where python 2>nul | find /i "WindowsApps" >nul
if errorlevel 1 goto fail_no_python_2
echo.
echo   The "python" command on this computer is the Microsoft Store shortcut in
echo   %%LOCALAPPDATA%%\Microsoft\WindowsApps, not a real Python: it only offers to open the Store.
echo   Either install Python from python.org as below, or turn the shortcut off in
echo   Settings ^> Apps ^> Advanced app settings ^> App execution aliases (python.exe, python3.exe).
:fail_no_python_2
echo.
echo   Install Python 3.11 (64-bit) from https://www.python.org/downloads/windows/
echo   In the installer tick "Add python.exe to PATH" (the "py" launcher is installed too),
echo   then open a NEW terminal and run install.bat again.
echo   To use a specific interpreter: set LW_PYTHON=C:\path\to\python.exe and run install.bat
goto fail

:fail_cd
echo ERROR: Cannot enter the project folder %ROOT%
goto fail
:fail_venv
echo ERROR: Could not create the venv with %BASE_PY%
goto fail
:fail_pip
echo ERROR: pip does not work in %VENV%. Delete the venv folder and run install.bat again.
goto fail
:fail_old_driver
echo ERROR: The NVIDIA driver supports only CUDA %DRIVER_CUDA%, too old for torch %TORCH_VERSION%.
echo   Update the NVIDIA driver (https://www.nvidia.com/drivers), reboot and run install.bat again.
echo   To install without GPU support instead:  set LW_TORCH=cpu  then run install.bat
goto fail
:fail_bad_choice
echo ERROR: LW_TORCH=%CHOICE% is not understood. Use auto, cpu, pypi, cu126, cu128 or cu130 (or set LW_TORCH_INDEX=URL).
goto fail
:fail_torch
echo ERROR: Installing torch failed (see pip's message above). Check the internet connection and free disk space.
echo   To choose another build:  set LW_TORCH=cpu  (or cu128, ...)  or  set LW_TORCH_INDEX=URL, then run install.bat
goto fail
:fail_torch_import
echo ERROR: torch was installed but does not import. To see why run:  "%PY%" -c "import torch"
goto fail
:fail_constraints
echo ERROR: Could not write %CONSTRAINTS%
goto fail
:fail_requirements
echo ERROR: Installing requirements.txt failed (see pip's message above).
goto fail
:fail_doctor
echo ERROR: The self-check found a problem (the FAIL lines above).
goto fail

:fail
echo.
echo The installation did not finish. Fix the problem above and run install.bat again.
del "%TMPF%" >nul 2>&1
call :maybe_pause
exit /b 1
