"""Data: the atom layout, structure reading, torsions, dataset and the data stages (fetch, angles, features, split)."""
