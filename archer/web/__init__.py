"""Web: the quart-trio routes Twilio calls; thin, they validate, bind log context, delegate."""
