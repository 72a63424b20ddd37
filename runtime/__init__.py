"""The bottom layer every flow stands on: settings, security, Kafka clients, metrics, health,
consumer lag, and the one runtime under every flow (`spec`, `source`, `sink`, `checkpoint`,
`flow`, `service`, `testing`). It imports nothing from the layers above it."""
