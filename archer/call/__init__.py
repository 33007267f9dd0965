"""The call: one nursery per phone call, written against ports, never against a socket."""
