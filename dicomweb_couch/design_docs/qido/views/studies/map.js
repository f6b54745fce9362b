function (doc) {
  // One row per instance, keyed [study, study attributes as JSON, series, modality, SOP class].
  // With _count and group_level 1..5 the same index answers: the page of studies (1), their
  // study-level attributes (2), series count (3), ModalitiesInStudy (4), SOPClassesInStudy (5).
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function first(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  }
  var study = first('0020000D');
  if (!study) { return; }
  // Patient and Study IE attributes (dicomweb_couch/levels.py)
  var STUDY = LEVEL_TAGS_STUDY, TRIAL = LEVEL_TAGS_STUDY_CLINICAL_TRIAL;
  var attrs = {};
  var tags = Object.keys(d).sort();
  for (var i = 0; i < tags.length; i++) {
    var t = tags[i], group = t.substring(0, 4);
    if (group === '0010' || (group === '0012' && (t < '00120060' || TRIAL.indexOf(t) >= 0))
        || STUDY.indexOf(t) >= 0) {
      attrs[t] = d[t];
    }
  }
  emit([study, JSON.stringify(attrs), first('0020000E'), first('00080060'), first('00080016')], null);
}
