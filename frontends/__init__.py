"""Model importers: each turns an external format into an ``ir.Graph``."""
