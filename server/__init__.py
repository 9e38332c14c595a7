"""Export server host: registration, leader discovery, heartbeat session, psutil sampler,
reconcile of desired vs running tasks, lease self-fencing."""
