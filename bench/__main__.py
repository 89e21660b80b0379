"""`python -m bench [--quick] [--duration S] [--warmup S] [--out DIR]`."""

from bench.run import main

raise SystemExit(main())
