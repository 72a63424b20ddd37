"""Apache Kafka (KRaft) from Maven Central's jars: fetched once, run on loopback.

`python -m scribe.stack.apache_kafka` (or `scripts/kafka.sh`) starts and stops a 1- or 3-node
cluster; `scribe stack up --broker apache` runs a single node in the embedded stack.
"""

from scribe.stack.apache_kafka.cluster import KafkaCluster, KafkaNode
from scribe.stack.apache_kafka.distribution import KafkaJars, fetch

__all__ = ["KafkaCluster", "KafkaJars", "KafkaNode", "fetch"]
