"""One lock for importing and loading the ML libraries from background threads (torch-free, so any thread can
take it before its first `import torch`). diffusers/transformers imported from two threads at once (GUI
callbacks: the Generate engine and the LoRA fit check) can hand one of them a half-initialised module
("module 'diffusers' has no attribute ...")."""
import threading

ML_IMPORT_LOCK = threading.RLock()
