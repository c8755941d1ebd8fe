"""Pictures of the answers: contact sheets."""
