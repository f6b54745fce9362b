function (doc, req) {
  // Filtered replication of one modality: "filter": "qido/modality", "query_params": {"modality": "CT"}.
  // Deletions always pass (a tombstone keeps only the StudyInstanceUID), so they propagate.
  if (doc._deleted) { return true; }
  var e = doc.dataset && doc.dataset['00080060'];
  return !!(e && e.Value && e.Value.indexOf(req.query.modality) >= 0);
}
