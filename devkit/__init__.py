"""Developer tooling, never imported by a production worker: the embedded stack, the
provider and CDN simulators, the load generator, the demo and the worker-process harness."""
