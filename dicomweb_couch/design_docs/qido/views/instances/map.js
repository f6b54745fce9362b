function (doc) {
  // One row per instance, keyed [study, series, SOP instance], valued with the attributes QIDO-RS
  // returns for instances (PS3.18 table 10.6.3-5 and common extras), so instance queries and
  // study/series/instance look-ups need no document reads.
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function first(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  }
  var study = first('0020000D'), series = first('0020000E'), sop = first('00080018') || doc._id;
  if (!study || !series) { return; }
  var INSTANCE = LEVEL_TAGS_INSTANCE;  // dicomweb_couch/levels.py
  var attrs = {};
  for (var i = 0; i < INSTANCE.length; i++) {
    if (d[INSTANCE[i]]) { attrs[INSTANCE[i]] = d[INSTANCE[i]]; }
  }
  if (typeof doc.transferSyntaxUID === 'string') {
    attrs['00083002'] = {vr: 'UI', Value: [doc.transferSyntaxUID]};
  }
  emit([study, series, sop], attrs);
}
