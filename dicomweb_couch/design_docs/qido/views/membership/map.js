function (doc) {
  // Which study an instance document belongs to, by document id: lets the study catalog learn
  // from the changes feed which studies changed without reading the (large) documents.
  var d = doc.dataset;
  var e = d && typeof d === 'object' ? d['0020000D'] : null;
  var study = (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  if (study) { emit(doc._id, study); }
}
