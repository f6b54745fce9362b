"""The QIDO search engine (PS3.18 10.6, PS3.4 C.2.2.2): matching rules and the study catalog."""
