"""The topic catalog, topic creation, the dead-letter path and the publisher."""
