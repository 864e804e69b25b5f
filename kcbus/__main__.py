from __future__ import annotations

from kcbus.cli import main

raise SystemExit(main())
