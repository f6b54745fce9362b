function (doc, req) {
  // Filtered replication of a StudyDate range: "filter": "qido/study_date",
  // "query_params": {"from": "20240101", "to": "20241231"} (either may be left out).
  // Deletions always pass (a tombstone keeps only the StudyInstanceUID), so they propagate.
  if (doc._deleted) { return true; }
  var e = doc.dataset && doc.dataset['00080020'];
  var date = (e && e.Value && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  if (!date) { return false; }
  return (!req.query.from || date >= req.query.from) && (!req.query.to || date <= req.query.to);
}
