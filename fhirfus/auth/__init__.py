"""Access control: SMART Backend Services tokens, scopes, roles, site compartments, audit trail."""
