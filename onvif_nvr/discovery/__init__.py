"""WS-Discovery (April 2005, SOAP-over-UDP) as ONVIF uses it (Core §7): the target service
that announces this box, and the client that finds cameras."""
