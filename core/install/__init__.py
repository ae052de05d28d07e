"""The installers' decisions (standard library only): core/install/plan.py is what install.sh and
install.bat run."""
