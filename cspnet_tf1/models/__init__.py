"""Network definitions of the CSPNet recipe (TF1 graph style)."""
