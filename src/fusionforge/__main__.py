from fusionforge.cli import main

raise SystemExit(main())
