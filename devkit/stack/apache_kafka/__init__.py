"""Apache Kafka (KRaft) from Maven Central's jars: fetched once, run on loopback.

`python -m devkit.stack.apache_kafka` (or `scripts/kafka.sh`) starts and stops a 1- or 3-node
cluster; `scribe stack up --broker apache` runs a single node in the embedded stack.
"""

from devkit.stack.apache_kafka.cluster import KafkaCluster, KafkaNode
from devkit.stack.apache_kafka.distribution import KafkaJars, fetch

__all__ = ["KafkaCluster", "KafkaJars", "KafkaNode", "fetch"]
