import sys

from onvif_nvr.cli import main

sys.exit(main())
