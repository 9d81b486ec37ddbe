"""createml_widgets: Create ML's image, hand pose and hand action classifiers for Jupyter."""
