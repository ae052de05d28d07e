import sys

from .train.process import end_process, restart_with_allocator

restart_with_allocator(sys.argv[1:2])  # a training command on Linux may start again here with tcmalloc (once)

from .cli import main  # noqa: E402

end_process(main())
