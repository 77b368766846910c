"""`python -m connector.cli`: the `connector` command."""

import sys

from connector.cli import main

sys.exit(main())
