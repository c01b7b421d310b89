"""Trust (docs/security.md): message signatures and the mesh's keys (:mod:`.keys`,
:mod:`.signing`), callers' bearer tokens and principals (:mod:`.tokens`), and what `itinerant up`
prepares for a local mesh (:mod:`.local`)."""
