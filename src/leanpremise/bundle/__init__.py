"""The export bundle: its layout, its manifest, and checking a bundle against its manifest. Export writes
it, serve reads it; neither reaches into the other."""
