"""Allow ``python3 -m kubevipd``."""

from kubevipd.cli import main

raise SystemExit(main())
