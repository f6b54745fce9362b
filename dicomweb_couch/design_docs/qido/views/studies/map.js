function (doc) {
  // One row per instance, keyed [study, series, modality, SOP class]; with _count and group_level
  // 1..4: the studies, their series, ModalitiesInStudy, SOPClassesInStudy and instance counts.
  // Lean on purpose: study attributes live in the documents, and each server process keeps them
  // in its study catalog (dicomweb_couch/search/catalog_store.py), so this index stays small.
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function first(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  }
  var study = first('0020000D');
  if (!study) { return; }
  emit([study, first('0020000E'), first('00080060'), first('00080016')], null);
}
