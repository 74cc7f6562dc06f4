"""The five workloads; each module's ``run(system, cfg)`` deploys what it needs and measures."""
