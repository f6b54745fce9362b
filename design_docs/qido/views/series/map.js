function (doc) {
  // One row per instance, keyed [study, series, series attributes as JSON]; with _count and
  // group_level 3 it is one row per series with NumberOfSeriesRelatedInstances.
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function first(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  }
  var study = first('0020000D'), series = first('0020000E');
  if (!study || !series) { return; }
  // General Series, General Equipment, Frame of Reference and request attributes (PS3.3 C.7.3.1, C.7.5.1, C.7.4.1).
  var SERIES = ['00080005', '00080021', '00080031', '00080060', '00080068', '00080070', '00080080',
                '00081010', '00081040', '0008103E', '00081050', '00081070', '00081090', '00081111',
                '00080201', '00180015', '00181030', '0020000E', '00200011', '00200052', '00200060',
                '00400244', '00400245', '00400254', '00400275'];
  var attrs = {};
  for (var i = 0; i < SERIES.length; i++) {
    if (d[SERIES[i]]) { attrs[SERIES[i]] = d[SERIES[i]]; }
  }
  emit([study, series, JSON.stringify(attrs)], null);
}
