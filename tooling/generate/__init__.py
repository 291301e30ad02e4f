"""Files generated from the roles, and the checks that they are current."""
