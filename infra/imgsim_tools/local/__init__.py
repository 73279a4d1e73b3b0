"""`imgsim serve`: the whole stack on one machine (see ``stack``)."""
