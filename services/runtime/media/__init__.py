"""Media: FileStorage (``storage``), references and keys (``refs``), type sniffing and caps
(``sniff``), and the safe fetcher (``fetch``) — the only way a caller's URL is fetched."""
