"""Export a trained model and its corpus as a bundle a premise server loads, and publish it."""
