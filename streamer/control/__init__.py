"""What the streamer should stream and which replica streams it: the control listener, the demand
read from Postgres, placement of instruments on accounts, account leases across replicas,
access-token health, and the reconciler that moves the pools to the plan."""
