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
  // Patient and Study IE attributes (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2, C.7.1.3, C.7.2.3).
  var STUDY = ['00080005', '00080020', '00080030', '00080050', '00080051', '00080090', '00080096',
               '00080201', '00081030', '00081032', '00081048', '00081049', '00081060', '00081062',
               '00081080', '00081110', '0020000D', '00200010', '00321032', '00321033', '00321060',
               '00321064', '00380010', '00380500'];
  var attrs = {};
  var tags = Object.keys(d).sort();
  for (var i = 0; i < tags.length; i++) {
    var t = tags[i], group = t.substring(0, 4);
    if (group === '0010' || (group === '0012' && (t < '00120060' || t === '00120062' || t === '00120063' || t === '00120064'))
        || STUDY.indexOf(t) >= 0) {
      attrs[t] = d[t];
    }
  }
  emit([study, JSON.stringify(attrs), first('0020000E'), first('00080060'), first('00080016')], null);
}
