"""The revisions a server serves: which bundles (plan), loading one (loader), and their lifecycle (load,
activate, swap on reload, close)."""
