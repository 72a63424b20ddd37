"""World simulation: world.events + world.ticks -> persistent world state."""
