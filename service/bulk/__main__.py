"""`python -m service.bulk score ...` (see `service.bulk.cli`)."""

from service.bulk.cli import main

raise SystemExit(main())
