"""The revisions a server serves: which bundles (plan), loading one (loader), what a request reads of one
(table), and their lifecycle (load, activate, swap on reload, close)."""
