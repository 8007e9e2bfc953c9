"""Where a task lives: the supervisor that claims it, its lifecycle, parameters,
failures and deadlines."""
