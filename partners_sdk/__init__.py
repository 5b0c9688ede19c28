"""The point-of-sale client merchants embed; it imports nothing from the hub's packages."""
