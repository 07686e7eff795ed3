"""`python -m gpurent_cli …` is the `gpurent` command."""

from __future__ import annotations

from .main import main

raise SystemExit(main())
