"""The parts a connector is composed from: transport, auth, paginators, API budget."""
