from lms_sync.cli import main

raise SystemExit(main())
