"""Serving: the BentoML service (`serving.service`) and the standalone batch scorer (`serving.score`)."""
