"""Training both stages on Lightning Fabric: one readable loop each, shared engine helpers, EMA."""
